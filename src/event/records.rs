//! The persisted forms of the graph's state besides events: history records (kept in memory and
//! in snapshots), snapshot entries, and the blocked values that splits and the admin routes add
//! (docs/behaviour.md §3.6, §10). Part of the snapshot format (bincode): variants and fields
//! may only be appended.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{NewContact, NewContactRef, Refusal};
use crate::contact::{ContactId, Email, Phone, Timestamp};

/// Emails and phone numbers blocked for matching at run time (docs/behaviour.md §10): by a
/// split, or by `POST /admin/blocked-values`. Values are normalized (docs/behaviour.md §4);
/// the graph keeps them sorted and without duplicates.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedValues {
    /// Blocked emails.
    pub emails: Vec<Email>,
    /// Blocked phone numbers.
    pub phones: Vec<Phone>,
}

impl BlockedValues {
    /// True when no value is listed.
    pub fn is_empty(&self) -> bool {
        self.emails.is_empty() && self.phones.is_empty()
    }

    /// The same values, each kind sorted and without duplicates (the form events and
    /// snapshots store, so that equal requests give equal records).
    pub fn normalized(mut self) -> BlockedValues {
        self.emails.sort();
        self.emails.dedup();
        self.phones.sort();
        self.phones.dedup();
        self
    }

    /// Number of values listed.
    pub fn len(&self) -> usize {
        self.emails.len() + self.phones.len()
    }
}

/// A history fact that is not an insert, as the graph keeps it in memory and snapshots store
/// it (ids, not slots): merges, deletions and refusals by the size cap. Inserts need no record:
/// every row is its own insert record (its values are the request's values, its `createdAt`
/// the time).
///
/// # Order
/// Each record stores `before_id`, the graph's next contact id when it was applied: it happened
/// after the insert of every id below `before_id` and before every insert from `before_id` on.
/// Records among themselves keep the order they were applied in, so the two together give the
/// log order that `GET /identities/{id}/history` answers in.
///
/// Part of the snapshot format (bincode): variants and fields may only be appended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HistoryRecord {
    /// `loser` (then a primary) was demoted into `winner`'s identity.
    Merged {
        /// The primary that stayed primary.
        winner: ContactId,
        /// The demoted primary.
        loser: ContactId,
        /// When (`None` for merges made by an import, which keep the file's timestamps).
        at: Option<Timestamp>,
        /// The contact whose email matched the request (merges made by `/identify`).
        by_email: Option<ContactId>,
        /// The contact whose phone matched the request.
        by_phone: Option<ContactId>,
        /// Next contact id when applied (see "Order" above).
        before_id: ContactId,
    },
    /// Contact `id` was deleted; `promoted` became primary if `id` was the primary.
    Deleted {
        /// The deleted contact.
        id: ContactId,
        /// `deletedAt`.
        at: Timestamp,
        /// The contact promoted to primary, if the primary was deleted and a live member was
        /// left.
        promoted: Option<ContactId>,
        /// Next contact id when applied.
        before_id: ContactId,
    },
    /// The identity size cap refused a change.
    Refused {
        /// What was refused (values wiped if the identity is erased).
        refusal: Refusal,
        /// Next contact id when applied.
        before_id: ContactId,
    },
    /// A split (docs/behaviour.md §10) made `primary` the primary of a part of the identity
    /// whose primary was `from`: one record per part whose primary changed.
    Split {
        /// The identity's primary before the split.
        from: ContactId,
        /// The primary of the part split off.
        primary: ContactId,
        /// The values whose blocking removed the links (the split's own values, or the
        /// retroactive block's); shared by the records of one split, which has one per part
        /// (encoded as the values themselves).
        values: Arc<BlockedValues>,
        /// When.
        at: Timestamp,
        /// Next contact id when applied.
        before_id: ContactId,
    },
}

impl HistoryRecord {
    /// The distinct contacts this record concerns, one to four: a merge names the two
    /// primaries and the two contacts whose values the request matched. A record belongs to the
    /// history of every identity that contains one of them, so a merge stays in the history
    /// (and among the links) of each part a later split leaves (docs/behaviour.md §10).
    pub fn contacts(&self) -> impl Iterator<Item = ContactId> {
        let named = match self {
            HistoryRecord::Merged {
                winner,
                loser,
                by_email,
                by_phone,
                ..
            } => [Some(*winner), Some(*loser), *by_email, *by_phone],
            HistoryRecord::Deleted { id, .. } => [Some(*id), None, None, None],
            HistoryRecord::Refused { refusal, .. } => {
                [Some(refusal.primary), refusal.other, None, None]
            }
            HistoryRecord::Split { from, primary, .. } => [Some(*from), Some(*primary), None, None],
        };
        let mut distinct = named;
        for k in 1..4 {
            if named[..k].contains(&named[k]) {
                distinct[k] = None;
            }
        }
        distinct.into_iter().flatten()
    }

    /// Next contact id when the record was applied.
    pub fn before_id(&self) -> ContactId {
        match self {
            HistoryRecord::Merged { before_id, .. }
            | HistoryRecord::Deleted { before_id, .. }
            | HistoryRecord::Refused { before_id, .. }
            | HistoryRecord::Split { before_id, .. } => *before_id,
        }
    }
}

/// One item of a snapshot: the contacts rebuild the graph, the history records restore
/// `GET /identities/{id}/history` (docs/behaviour.md §6.5).
///
/// Part of the snapshot format (bincode; the variant index is a `u32`: 0 `Contact`,
/// 1 `History`, 2 `Clock`, 3 `Blocked`): variants may only be appended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotEntry {
    /// A row, linked to the smallest-id earlier member of its identity.
    Contact(NewContact),
    /// A merge, deletion or refusal record.
    History(HistoryRecord),
    /// The graph's clock (largest `createdAt` ever recorded), which erased rows no longer
    /// carry: new rows never get an older `createdAt` (docs/behaviour.md §2).
    Clock(Timestamp),
    /// The values blocked at run time (docs/behaviour.md §10), written once when any are.
    Blocked(BlockedValues),
}

/// A [`SnapshotEntry`] as the snapshot reader hands it out: a row borrows its values from the
/// chunk being read (recovery copies them once, into the graph's arena).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotItem<'a> {
    /// As [`SnapshotEntry::Contact`].
    Contact(NewContactRef<'a>),
    /// As [`SnapshotEntry::History`].
    History(HistoryRecord),
    /// As [`SnapshotEntry::Clock`].
    Clock(Timestamp),
    /// As [`SnapshotEntry::Blocked`].
    Blocked(BlockedValues),
}

impl SnapshotEntry {
    /// Overwrites the values the entry holds (a row's email and phone, a refusal record's)
    /// with zeros before freeing them: a snapshot writer's copies of values that may be
    /// erased later (docs/behaviour.md §6.7).
    pub fn wipe(self) {
        match self {
            SnapshotEntry::Contact(contact) => {
                if let Some(email) = contact.email {
                    email.wipe();
                }
                if let Some(phone) = contact.phone {
                    phone.wipe();
                }
            }
            SnapshotEntry::History(HistoryRecord::Refused { refusal, .. }) => refusal.wipe(),
            SnapshotEntry::History(_) | SnapshotEntry::Clock(_) | SnapshotEntry::Blocked(_) => {}
        }
    }

    /// The entry as the snapshot reader would hand it out (its row's values borrowed).
    pub fn as_item(&self) -> SnapshotItem<'_> {
        match self {
            SnapshotEntry::Contact(contact) => SnapshotItem::Contact(contact.as_row()),
            SnapshotEntry::History(record) => SnapshotItem::History(record.clone()),
            SnapshotEntry::Clock(clock) => SnapshotItem::Clock(*clock),
            SnapshotEntry::Blocked(values) => SnapshotItem::Blocked(values.clone()),
        }
    }
}

impl SnapshotItem<'_> {
    /// The owned entry (tests and tools; recovery uses the borrowed item).
    pub fn to_entry(&self) -> SnapshotEntry {
        match self {
            SnapshotItem::Contact(row) => SnapshotEntry::Contact(row.to_owned_contact()),
            SnapshotItem::History(record) => SnapshotEntry::History(record.clone()),
            SnapshotItem::Clock(clock) => SnapshotEntry::Clock(*clock),
            SnapshotItem::Blocked(values) => SnapshotEntry::Blocked(values.clone()),
        }
    }
}
