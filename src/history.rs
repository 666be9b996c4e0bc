//! Identity history (issue 5 "History"): what happened to an identity, in the order it
//! happened.
//!
//! Inserts need no record: every row is its own insert record (its values are the request's
//! values, its `createdAt` the time). Everything else that happens to an identity — merges,
//! deletions, refusals by the size cap — is kept as a compact [`HistoryRecord`] in the graph and
//! in every snapshot, so history survives snapshots and restarts.
//!
//! # Order
//! Each record stores `before_id`, the graph's next contact id when it was applied: it happened
//! after the insert of every id below `before_id` and before every insert from `before_id` on.
//! Records among themselves keep the order they were applied in. [`HistoryEntry`] lists are
//! sorted by that order, which is the log order.

use serde::{Deserialize, Serialize};

use crate::contact::{ContactId, Email, Phone, Timestamp};
use crate::event::Refusal;

/// A history fact that is not an insert, as stored in memory and in snapshots (ids, not slots).
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
        /// Next contact id when applied (see the module docs).
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
}

impl HistoryRecord {
    /// The contacts this record concerns (a record belongs to the history of every identity
    /// that contains one of them).
    pub fn contacts(&self) -> impl Iterator<Item = ContactId> {
        let (a, b) = match self {
            HistoryRecord::Merged { winner, loser, .. } => (*winner, Some(*loser)),
            HistoryRecord::Deleted { id, .. } => (*id, None),
            HistoryRecord::Refused { refusal, .. } => (refusal.primary, refusal.other),
        };
        std::iter::once(a).chain(b)
    }

    /// Next contact id when the record was applied.
    pub fn before_id(&self) -> ContactId {
        match self {
            HistoryRecord::Merged { before_id, .. }
            | HistoryRecord::Deleted { before_id, .. }
            | HistoryRecord::Refused { before_id, .. } => *before_id,
        }
    }
}

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
}
